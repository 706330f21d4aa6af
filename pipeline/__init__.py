"""listcon.pipeline"""
