// Search page: take a photo (drop or choose), search its largest face, draw every face found as a
// numbered box on the photo; clicking a box searches that face. Results come back as server-rendered
// HTML from /ui/results (the same inputs as /api/v1/search); the photo never leaves this page otherwise.
(function () {
  "use strict";
  const form = document.getElementById("search-form");
  if (!form) return;  // the purpose comes first
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const input = document.getElementById("probe-file");
  const dropZone = document.getElementById("drop-zone");
  const probe = document.getElementById("probe");
  const image = document.getElementById("probe-image");
  const boxes = document.getElementById("probe-boxes");
  const results = document.getElementById("results");
  const status = document.getElementById("status");
  let photo = null;
  let searchedFace = null;

  function choose(file) {
    if (!file) return;
    photo = file;
    image.src = URL.createObjectURL(file);
    probe.hidden = false;
    boxes.replaceChildren();
    search(null, false);
  }

  function say(text, kind) {
    status.textContent = text;
    status.className = "status " + (kind || "");
  }

  async function search(face, showAll) {
    const data = new FormData(form);
    data.set("file", photo, photo.name || "probe");
    if (face !== null) data.set("face", face);
    if (showAll) data.set("show_all", "true");
    if (!data.get("in")) data.delete("in");
    say("Searching...", "busy");
    const response = await fetch("/ui/results", { method: "POST", body: data, headers: { "X-CSRF-Token": csrf } });
    if (response.redirected) { window.location = response.url; return; }  // the login expired
    const text = await response.text();
    if (!response.ok) {
      let problem;
      try { problem = JSON.parse(text); } catch (error) { problem = { detail: text }; }
      say(problem.detail || "The search failed.", "error");
      results.replaceChildren();
      return;
    }
    say("");
    results.innerHTML = text;
    const found = results.querySelector(".results");
    searchedFace = Number(found.dataset.searchedFace);
    drawBoxes(JSON.parse(results.querySelector(".probe-faces").textContent));
  }

  function drawBoxes(faces) {
    if (!image.complete || !image.naturalWidth) {
      image.addEventListener("load", () => drawBoxes(faces), { once: true });
      return;
    }
    const width = image.naturalWidth, height = image.naturalHeight;
    boxes.replaceChildren(...faces.map((face) => {
      const box = document.createElement("button");
      box.type = "button";
      box.className = "face-box" + (face.face_index === searchedFace ? " searched" : "");
      box.dataset.face = face.face_index;
      box.title = "Search face " + face.face_index;
      box.style.left = (100 * face.x1 / width) + "%";
      box.style.top = (100 * face.y1 / height) + "%";
      box.style.width = (100 * (face.x2 - face.x1) / width) + "%";
      box.style.height = (100 * (face.y2 - face.y1) / height) + "%";
      const number = document.createElement("b");
      number.textContent = face.face_index;
      box.append(number);
      box.addEventListener("click", () => search(face.face_index, false));
      return box;
    }));
  }

  input.addEventListener("change", () => choose(input.files[0]));
  form.addEventListener("submit", (event) => event.preventDefault());
  dropZone.addEventListener("dragover", (event) => { event.preventDefault(); dropZone.classList.add("over"); });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("over"));
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  results.addEventListener("click", (event) => {
    if (event.target.matches("[data-show-all]")) search(searchedFace, true);
  });
})();
