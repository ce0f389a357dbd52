"""chaosext.egress"""
