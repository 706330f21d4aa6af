"""listcon.schemas"""
