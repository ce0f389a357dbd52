"""chaosext.lab"""
