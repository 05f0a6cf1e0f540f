from arcdiff.cli import main

main()
