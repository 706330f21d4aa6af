"""listcon.jobs"""
