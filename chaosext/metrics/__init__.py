"""chaosext.metrics"""
