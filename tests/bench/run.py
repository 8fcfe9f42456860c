"""`tox -e bench` / `make bench`: every benchmark, one table each."""

from tests.bench import propagation

if __name__ == "__main__":
    print("## OSProfiler propagation (extract + inject)\n")
    print(propagation.table(propagation.measure()))
