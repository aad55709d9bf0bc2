// Light / dark / automatic (prefers-color-scheme) theme, remembered in localStorage.
const KEY = "contrail.theme";
const ORDER = ["auto", "light", "dark"];
const root = document.documentElement;
const button = document.getElementById("theme-toggle");

function apply(theme) {
  root.dataset.theme = theme;
  if (button) {
    button.textContent = `Theme: ${theme}`;
    button.setAttribute("aria-label", `Colour theme: ${theme}; press to change`);
  }
  window.dispatchEvent(new CustomEvent("contrail:theme", { detail: theme }));
}

apply(localStorage.getItem(KEY) || "auto");
button?.addEventListener("click", () => {
  const next = ORDER[(ORDER.indexOf(root.dataset.theme) + 1) % ORDER.length];
  localStorage.setItem(KEY, next);
  apply(next);
});
