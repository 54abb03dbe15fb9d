"""Talking to Triton: the serving launcher (``clients.serve``) and the client library and command line.

``python -m clients --help`` lists the commands.
"""
