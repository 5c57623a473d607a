"""The RWKV chat engine: checkpoints through the rwkv package (``model``), one forward for
decode and chunked prefill (``forward``, ``wkv``), device-resident state rows (``pool``),
batched on-device sampling (``sampler``), CUDA graphs (``graphs``), the prefix-state
cache (``cache``) and the scheduler (``engine``)."""
