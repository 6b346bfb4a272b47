import { useState, type FormEvent } from "react";

/** The node requires a login; any user may watch, commands need their permissions. */
export function Login({ login, error }: { login: (user: string, password: string) => void; error: string | null }) {
  const [user, setUser] = useState("root");
  const [password, setPassword] = useState("");
  const submit = (event: FormEvent) => {
    event.preventDefault();
    login(user, password);
  };
  return (
    <form className="login" onSubmit={submit}>
      <h2>Log in</h2>
      <p className="dim">This node requires a login. A read-only user can watch; commands need their permissions.</p>
      <label>
        user <input data-testid="login-user" value={user} onChange={(e) => setUser(e.target.value)} autoComplete="username" />
      </label>
      <label>
        password{" "}
        <input
          data-testid="login-password"
          type="password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          autoComplete="current-password"
        />
      </label>
      <button type="submit" data-testid="login-submit">
        Log in
      </button>
      {error && <p className="error" data-testid="login-error">{error}</p>}
    </form>
  );
}
