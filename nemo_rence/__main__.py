from nemo_rence.cli import main

raise SystemExit(main())
