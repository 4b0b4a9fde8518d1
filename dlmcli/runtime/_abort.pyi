# The throttled abort callback (_abort.c): its address, and the size of its data struct.
ADDRESS: int
HOOK_SIZE: int
