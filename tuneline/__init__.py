"""tuneline: validated data in, a registered, quantized, exported model out.

The library never imports Prefect: tasks/ wrap these functions, flows/ wire them.
"""

__version__ = "0.1.0"
