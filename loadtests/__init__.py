"""Locust load tests of a melstream server (see locustfile.py)."""
