from mgas_bench.cli import main

main()
