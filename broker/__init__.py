import logging

# A library's loggers: silent unless whoever runs the server routes them (broker/logs.py).
logging.getLogger("broker").addHandler(logging.NullHandler())
