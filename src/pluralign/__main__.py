from pluralign.cli.main import main

main()
