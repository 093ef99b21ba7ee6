from imgsim.cli import main

raise SystemExit(main())
