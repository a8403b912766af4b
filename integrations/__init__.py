"""Integrations of aiodbpool with web frameworks."""
