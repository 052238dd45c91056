import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network from tests
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
