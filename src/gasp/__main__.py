from gasp.cli import main

raise SystemExit(main())
