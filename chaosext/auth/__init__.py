"""chaosext.auth"""
