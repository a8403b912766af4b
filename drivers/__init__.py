"""Drivers for the databases aiodbpool supports, one module each, plus ``fake`` for test suites.

Each driver module is imported only when used, so installing aiodbpool never pulls in a database
client you do not use.
"""
