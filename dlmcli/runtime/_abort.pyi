# The throttled abort callback (_abort.c): its address, and its data struct's size and field offsets.
ADDRESS: int
LAYOUT: tuple[int, int, int, int, int, int]
