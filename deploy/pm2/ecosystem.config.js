// pm2 start deploy/pm2/ecosystem.config.js   (from anywhere; paths are relative to the repository)
// KIMI_BRIDGE_PYTHON and KIMI_BRIDGE_CONFIG override the interpreter and the config path.
const path = require("path");

const root = path.resolve(__dirname, "..", "..");
const python = process.env.KIMI_BRIDGE_PYTHON || path.join(root, ".venv", "bin", "python");
const config = process.env.KIMI_BRIDGE_CONFIG || path.join(root, "config.json");

const common = {
  cwd: root,
  script: python,
  interpreter: "none",
  autorestart: true,
  max_restarts: 20,
  restart_delay: 5000,
  kill_timeout: 45000, // SIGTERM first: a refresh on the wire is finished and saved before exit
  env: { PYTHONUNBUFFERED: "1" },
};

module.exports = {
  apps: [
    { ...common, name: "kimi-bridge-refresher", args: ["-m", "refresher", "--config", config] },
    { ...common, name: "kimi-bridge-server", args: ["-m", "server", "--config", config] },
  ],
};
