from valetkey.cli.main import main

main()
