// pm2 start deploy/pm2/ecosystem.config.js   (from anywhere; paths are relative to the repository)
// KIMI_BRIDGE_PYTHON and KIMI_BRIDGE_CONFIG override the interpreter and the config path.
const path = require("path");

const root = path.resolve(__dirname, "..", "..");
const python = process.env.KIMI_BRIDGE_PYTHON || path.join(root, ".venv", "bin", "python");
const config = process.env.KIMI_BRIDGE_CONFIG || path.join(root, "config.json");

// --log-stream split: pm2 files stderr as the error log, so INFO lines go to stdout (the out log).
const common = {
  cwd: root,
  script: python,
  interpreter: "none",
  autorestart: true,
  max_restarts: 20,
  restart_delay: 5000,
  stop_exit_codes: [2], // exit 2: a config it cannot use (one line in the error log); a restart cannot mend it
  kill_timeout: 45000, // SIGTERM first: a refresh on the wire is finished and saved before exit
  env: { PYTHONUNBUFFERED: "1" },
};

module.exports = {
  apps: [
    { ...common, name: "kimi-bridge-refresher", args: ["-m", "refresher", "--config", config, "--log-stream", "split"] },
    { ...common, name: "kimi-bridge-server", args: ["-m", "server", "--config", config, "--log-stream", "split"] },
  ],
};
