"""``python -m jobs.detect``: exactly ``star detect`` (the KubeRay entrypoint)."""

from jobs.detect import main

raise SystemExit(main())
