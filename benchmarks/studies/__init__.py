"""Study scripts: the code behind recorded results in ``benchmarks/results/`` (which holds only
the records). Each module says how to run it and which record it writes; tests import the
pieces they reuse from here instead of executing a results file."""
