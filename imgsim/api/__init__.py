"""The public API: one set of questions (imgsim.api.answers) asked in process (`imgsim.open`, imgsim.api.collection),
over HTTP (`imgsim.Client`, imgsim.api.client), and served over HTTP by `imgsim api` (imgsim.api.server).

This package's own import is light: the web framework is imported by the server's modules only.
"""
