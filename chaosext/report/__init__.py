"""chaosext.report"""
