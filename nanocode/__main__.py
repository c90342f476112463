from nanocode.cli import main

main()
