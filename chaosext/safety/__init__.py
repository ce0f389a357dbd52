"""chaosext.safety"""
