"""What the tests and the benchmarks both drive: real processes and a lean load client."""
