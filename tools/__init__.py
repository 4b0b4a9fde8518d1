"""Development tools kept out of the installed package: the tests, benchmarks and training scripts import them."""
