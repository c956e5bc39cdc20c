"""The one settings object of the service, read from `PGOLF_AUDIT_*` environment variables.

Every knob of the API, the worker and the store lives here (docs/configuration.md lists them).
Defaults are the *embedded* deployment: a SQLite file, a blob directory and a serverless Celery
broker (kombu's SQLAlchemy transport on a second SQLite file), all under `$PGOLF_AUDIT_HOME`
(`~/.pgolf-audit`), so `pgolf-audit serve` works on a fresh machine with no servers.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path("~/.pgolf-audit").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PGOLF_AUDIT_", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    home: Path = Field(default_factory=_default_home)
    database_url: str = ""            # default: sqlite:///<home>/audit.db
    blob_dir: Path | None = None      # default: <home>/blobs
    auto_migrate: bool = True         # run `alembic upgrade head` when the API starts

    # --- broker / Celery ---------------------------------------------------------------------
    broker_url: str = ""              # default: sqla+sqlite:///<home>/broker.db (no server)
    result_backend: str | None = None  # task results are not needed: state lives in the store
    queue_audit: str = "audit"        # CPU queue: intake, static audit, judging, notify
    queue_gpu: str = "gpu"            # GPU queue: reproduction runs (concurrency 1)
    # Redis redelivers an unacknowledged task after this many seconds: keep it above the
    # longest job (a 3-seed reproduction at 600 s train + 600 s eval each, plus slack).
    redis_visibility_timeout_s: int = 6 * 3600
    broker_connect_timeout_s: float = 3.0
    enqueue_retries: int = 1          # publish retries before the API leaves the job to the sweeper

    # --- jobs --------------------------------------------------------------------------------
    static_deadline_s: int = 900      # a static audit takes seconds; past this it is an infra fault
    reproduce_deadline_s: int = 4 * 3600
    # one seed's hard limit in the sandbox (train 600 s + eval 600 s + slack when unset)
    run_timeout_s: float | None = None
    job_stale_after_s: int = 300      # a running job without a heartbeat this long: worker died
    requeue_queued_after_s: int = 120  # a queued job not picked up this long is published again
    task_max_retries: int = 5         # infrastructure errors: retries with exponential backoff
    task_retry_backoff_s: float = 2.0
    sweeper_interval_s: float = 60.0
    default_policy: str | None = None  # rule set; None = the rules engine's default
    # Fault injection for the crash tests: the audit pauses this long (heart-beating) after it
    # claims a job, so a test can kill the worker mid-audit. Always 0 in production.
    fault_injection_pause_s: float = 0.0

    # --- reproduction (GPU worker) ----------------------------------------------------------
    data_dir: Path | None = None          # FineWeb shards (mounted read-only); PGOLF_DATA_DIR also works
    tokenizer_path: Path | None = None    # the SentencePiece model matching the shards

    # --- API ---------------------------------------------------------------------------------
    max_upload_bytes: int = 50 * 1024 * 1024
    reports_public: bool = True       # GET of submissions/verdicts/reports needs no token
    submit_requires_token: bool = True
    verdict_cache_ttl_s: float = 2.0  # serialized verdicts are served from memory this long
    public_base_url: str = "http://127.0.0.1:8000"

    # --- GitHub ------------------------------------------------------------------------------
    github_api_url: str = "https://api.github.com"
    github_token: str | None = None
    github_webhook_secret: str | None = None

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        self.home = Path(self.home).expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'audit.db'}"
        if self.blob_dir is None:
            self.blob_dir = self.home / "blobs"
        self.blob_dir = Path(self.blob_dir).expanduser()
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.home / 'broker.db'}"
        return self

    @property
    def broker_is_redis(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://", "redis+socket://"))

    def ensure_dirs(self) -> None:
        """Create the home and blob directories (embedded mode writes its SQLite files there)."""
        self.home.mkdir(parents=True, exist_ok=True)
        assert self.blob_dir is not None
        self.blob_dir.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
