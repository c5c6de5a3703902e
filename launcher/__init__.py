"""Run the stack on this machine: the `tritonserver` of the nvidia-pytriton wheel and the adapter."""
