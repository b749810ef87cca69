"""A single-node Apache Kafka broker (KRaft) on loopback, for development, tests and the demo.

The broker's jars come from Maven Central (``deploy/kafka/pom.xml``, resolved once with
``mvn dependency:copy-dependencies`` into a cache); the broker runs as ``java kafka.Kafka``
and is stopped by pid. The CLI (``shiftwatch broker``) and the pytest fixture both use
:class:`EmbeddedBroker`. Set ``KAFKA_BOOTSTRAP`` to use an external cluster instead.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
PID_FILE = "broker.pid"
BOOTSTRAP_FILE = "bootstrap"


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped."""


def default_cache_dir() -> Path:
    """``$SHIFTWATCH_CACHE`` or ``~/.cache/shiftwatch``: where the broker's jars are kept."""
    return Path(os.environ.get("SHIFTWATCH_CACHE", Path.home() / ".cache" / "shiftwatch"))


def fetch_jars(cache_dir: Path | None = None, version: str = KAFKA_VERSION) -> Path:
    """The directory of the broker's jars, resolved from Maven Central on first use."""
    libs = (cache_dir or default_cache_dir()) / f"kafka-{version}" / "libs"
    done = libs / ".complete"
    if done.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (mvn) is needed once to fetch the Kafka broker jars; install it or set KAFKA_BOOTSTRAP"
        )
    if shutil.which("java") is None:
        raise BrokerError("Java 17+ is needed to run the Kafka broker; install it or set KAFKA_BOOTSTRAP")
    print(f"fetching Apache Kafka {version} jars from Maven Central into {libs} (once)...", file=sys.stderr)
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-Dkafka.version={version}",
        f"-DoutputDirectory={staging}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerError(f"mvn could not fetch Kafka {version}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    done.touch()
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def cluster_id() -> str:
    """A random KRaft cluster id: base64url of 16 bytes. Like Kafka's own ``random-uuid``, never
    one starting with ``-``, which the storage tool's argument parser would take for an option."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.cleaner.backoff.ms": "1000",
        # well within a quarter of the shortest erasure deadline the tests set (topics/specs.py),
        # from a second after the start (Kafka's default waits 30 s before the first check)
        "log.retention.check.interval.ms": "1000",
        "log.initial.task.delay.ms": "1000",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
"""


@dataclass
class EmbeddedBroker:
    """A Kafka broker process whose state lives in ``data_dir``.

    ``start()`` formats the log directory on first use, launches the JVM, writes its pid
    and bootstrap address into ``data_dir`` and waits until the broker accepts
    connections. ``stop()`` sends SIGTERM (a clean shutdown) and SIGKILL after
    ``stop_timeout`` seconds. A broker started by another process (``shiftwatch broker
    start --detach``) is found again through its pid file.
    """

    data_dir: Path
    port: int | None = None
    heap: str = "512m"
    startup_timeout: float = 60.0
    stop_timeout: float = 20.0
    cache_dir: Path | None = None
    version: str = KAFKA_VERSION

    @property
    def bootstrap(self) -> str:
        path = self.data_dir / BOOTSTRAP_FILE
        if not path.exists():
            raise BrokerError(f"no broker has been started in {self.data_dir}")
        return path.read_text().strip()

    @property
    def pid(self) -> int | None:
        path = self.data_dir / PID_FILE
        if not path.exists():
            return None
        pid = int(path.read_text())
        return pid if _alive(pid) else None

    def start(self) -> str:
        """Start the broker (or find it running); returns its bootstrap address."""
        if self.pid is not None:
            return self.bootstrap
        libs = fetch_jars(self.cache_dir, self.version)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port, controller_port = self._ports()
        properties = self.data_dir / "server.properties"
        properties.write_text(server_properties(self.data_dir, port, controller_port))
        (self.data_dir / "log4j2.properties").write_text(LOG4J2.format(log=self.data_dir / "broker.log"))
        classpath = f"{libs}/*"
        java = ["java", f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}", "-cp", classpath]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            format_command = [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id(),
                "-c",
                str(properties),
            ]
            result = subprocess.run(format_command, capture_output=True, text=True)
            if result.returncode != 0:
                raise BrokerError(f"formatting {self.data_dir / 'logs'} failed:\n{result.stdout}{result.stderr}")
        with open(self.data_dir / "console.log", "ab") as console:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [
                    *java[:1],
                    f"-Xmx{self.heap}",
                    f"-Xms{self.heap}",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    *java[1:],
                    "kafka.Kafka",
                    str(properties),
                ],
                stdout=console,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it cleanly
            )
        (self.data_dir / PID_FILE).write_text(str(process.pid))
        bootstrap = f"127.0.0.1:{port}"
        (self.data_dir / BOOTSTRAP_FILE).write_text(bootstrap)
        deadline = time.monotonic() + self.startup_timeout
        while not port_open("127.0.0.1", port):
            if process.poll() is not None:
                raise BrokerError(f"the broker exited with {process.returncode}; see {self.data_dir / 'console.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the broker did not open port {port} within {self.startup_timeout} s")
            time.sleep(0.2)
        return bootstrap

    def _ports(self) -> tuple[int, int]:
        """Client and controller ports, kept across restarts: the controller's address is
        recorded in the metadata log when it is formatted."""
        path = self.data_dir / "ports"
        if path.exists():
            port, controller_port = (int(p) for p in path.read_text().split())
            port = self.port or port
        else:
            port, controller_port = self.port or free_port(), free_port()
        path.write_text(f"{port} {controller_port}\n")
        return port, controller_port

    def stop(self) -> bool:
        """Stop the broker by pid; returns whether one was running."""
        pid = self.pid
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        (self.data_dir / PID_FILE).unlink(missing_ok=True)
        return True

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child and has exited
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
