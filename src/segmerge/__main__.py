from segmerge.cli import main

main()
