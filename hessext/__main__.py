from hessext.cli import main

raise SystemExit(main())
