"""The use case: a generation request, run once upstream and followed by every client that asks
the same (cache, joining, resume), whatever API it speaks."""
