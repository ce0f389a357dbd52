"""chaosext.audit"""
