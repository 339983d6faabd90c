from radmfa.cli.main import main

raise SystemExit(main())
