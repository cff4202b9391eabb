"""``sfvq explore``: a local web page to walk a run's curve, inspect its segments and use them.

See :mod:`sfvq.explore.app` for the API and its safety rules.
"""

from sfvq.explore.app import ApiError, Explorer, bind, create_app, serve, url_of

__all__ = ["ApiError", "Explorer", "bind", "create_app", "serve", "url_of"]
