"""Pure tensor math of the algorithms: losses, KL estimators and controllers, the prompt filter.

Never imports torch.distributed, megatron or tensorrt_llm: everything here runs on any device
and is tested on CPU against independent computations.
"""
