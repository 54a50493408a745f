from pg_backup.main import console_main

raise SystemExit(console_main())
