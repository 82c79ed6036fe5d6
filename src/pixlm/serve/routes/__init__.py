"""The app's routes, one router per feature (``build_app`` includes them); each reads what it needs from
``request.app.state``: ``engine`` (pipeline, batcher, metrics), ``limits``, ``settings`` and ``store``."""
