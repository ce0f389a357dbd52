"""chaosext.load"""
