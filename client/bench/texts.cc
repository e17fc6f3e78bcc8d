#include "client/bench/texts.h"

#include <fstream>
#include <stdexcept>

namespace normserve::bench {

const std::vector<TextPair>& BuiltinTexts() {
  static const std::vector<TextPair> kTexts = {
      {"Guten Morgen.", "Good morning."},
      {"Das Haus ist groß.", "The house is big."},
      {"Ich habe Hunger.", "I am hungry."},
      {"Wo ist der Bahnhof?", "Where is the train station?"},
      {"Das Wetter ist heute schön.", "The weather is nice today."},
      {"Wir fahren morgen nach Berlin.", "We are driving to Berlin tomorrow."},
      {"Kannst du mir bitte helfen?", "Can you help me, please?"},
      {"Der Zug hat zehn Minuten Verspätung.", "The train is ten minutes late."},
      {"Sie liest jeden Abend ein Buch.", "She reads a book every evening."},
      {"Das ist nicht möglich.", "That is not possible."},
      {"Ich verstehe die Frage nicht.", "I do not understand the question."},
      {"Die Kinder spielen im Garten.", "The children are playing in the garden."},
      {"Wie viel kostet das?", "How much does that cost?"},
      {"Mein Bruder wohnt in Hamburg.", "My brother lives in Hamburg."},
      {"Es regnet seit drei Tagen.", "It has been raining for three days."},
      {"Bitte schließen Sie die Tür.", "Please close the door."},
      {"Der Kaffee ist zu heiß.", "The coffee is too hot."},
      {"Wir haben keine Zeit.", "We have no time."},
      {"Er arbeitet als Arzt in einem kleinen Krankenhaus.",
       "He works as a doctor in a small hospital."},
      {"Die Sitzung beginnt um neun Uhr.", "The meeting starts at nine o'clock."},
      {"Ich möchte ein Zimmer für zwei Nächte reservieren.",
       "I would like to book a room for two nights."},
      {"Das Essen war ausgezeichnet.", "The food was excellent."},
      {"Hast du den Schlüssel gesehen?", "Have you seen the key?"},
      {"Die Stadt liegt an einem großen Fluss.", "The city lies on a big river."},
      {"Morgen wird es kalt.", "It will be cold tomorrow."},
      {"Sie hat gestern ihre Prüfung bestanden.", "She passed her exam yesterday."},
      {"Der Hund schläft unter dem Tisch.", "The dog is sleeping under the table."},
      {"Ich trinke lieber Tee als Kaffee.", "I prefer tea to coffee."},
      {"Das Museum ist am Montag geschlossen.", "The museum is closed on Monday."},
      {"Wann kommst du nach Hause?", "When are you coming home?"},
      {"Die Regierung hat ein neues Gesetz beschlossen.", "The government has passed a new law."},
      {"Dieser Computer ist sehr langsam.", "This computer is very slow."},
      {"Wir treffen uns vor dem Kino.", "We will meet in front of the cinema."},
      {"Mein Telefon funktioniert nicht mehr.", "My phone does not work anymore."},
      {"Im Sommer fahren viele Leute ans Meer.", "In summer many people go to the sea."},
      {"Er hat das Fenster geöffnet.", "He opened the window."},
      {"Könnten Sie das bitte wiederholen?", "Could you repeat that, please?"},
      {"Die Preise sind im letzten Jahr gestiegen.", "Prices rose last year."},
      {"Ich suche eine günstige Wohnung in der Nähe der Universität.",
       "I am looking for a cheap flat near the university."},
      {"Heute Abend gehen wir ins Theater.", "Tonight we are going to the theatre."},
      {"Das Konzert war leider ausverkauft.", "Unfortunately the concert was sold out."},
      {"Sie spricht drei Sprachen fließend.", "She speaks three languages fluently."},
      {"Der Arzt sagt, ich soll mehr schlafen.", "The doctor says I should sleep more."},
      {"Hier darf man nicht rauchen.", "Smoking is not allowed here."},
      {"Unser Flug wurde gestrichen.", "Our flight was cancelled."},
      {"Danke für deine Hilfe.", "Thank you for your help."},
      {"Das Auto steht vor der Garage.", "The car is in front of the garage."},
      {"Ich habe meine Brille vergessen.", "I forgot my glasses."},
      {"Die Bäckerei öffnet um sechs Uhr morgens.", "The bakery opens at six in the morning."},
      {"Wir sollten bald eine Entscheidung treffen.", "We should make a decision soon."},
      {"Ein großes Haus.", "A big house."},
      {"Ja.", "Yes."},
  };
  return kTexts;
}

std::vector<TextPair> LoadTexts(const std::string& path, bool pairs) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read --texts file '" + path + "'");
  std::vector<TextPair> texts;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (!pairs) {
      texts.push_back({line, line});
      continue;
    }
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) {
      throw std::invalid_argument(path + ":" + std::to_string(line_number) +
                                  ": scoring a translation model needs SOURCE<TAB>TARGET lines");
    }
    texts.push_back({line.substr(0, tab), line.substr(tab + 1)});
  }
  if (texts.empty()) throw std::invalid_argument("--texts file '" + path + "' has no texts");
  return texts;
}

}  // namespace normserve::bench
