import os

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

# Tests use tiny tensors: one thread avoids oversubscription, which on a shared 2-core machine
# made small training steps up to 60x slower with torch's default thread count.
torch.set_num_threads(1)
