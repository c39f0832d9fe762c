from r1cli.cli import main

main()
