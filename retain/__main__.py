from retain.daemon.cli import main

main()
