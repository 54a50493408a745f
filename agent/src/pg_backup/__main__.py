from pg_backup.cli import main

raise SystemExit(main())
