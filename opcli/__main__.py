from opcli.cli import main

main()
