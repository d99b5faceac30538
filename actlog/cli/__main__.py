from actlog.cli import main

main()
